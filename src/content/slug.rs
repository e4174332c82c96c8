//! Slugs for tags, categories and file names: German letters transliterated, lowercase ASCII.

/// `Öffentliche Verwaltung` → `oeffentliche-verwaltung`, `🚀 Digitalisierung` → `digitalisierung`.
///
/// German letters become their two-letter forms, other accents are stripped, and every run of
/// other characters becomes one `-`; the result is trimmed of `-`. It may be empty.
pub fn slugify(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_dash = false;
    for c in s.chars() {
        let mapped: Option<&str> = match c {
            'ä' | 'Ä' => Some("ae"),
            'ö' | 'Ö' => Some("oe"),
            'ü' | 'Ü' => Some("ue"),
            'ß' | 'ẞ' => Some("ss"),
            _ => None,
        };
        let mut push = |piece: &str, out: &mut String| {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push_str(piece);
        };
        if let Some(m) = mapped {
            push(m, &mut out);
        } else if c.is_ascii_alphanumeric() {
            push(c.to_ascii_lowercase().encode_utf8(&mut [0; 4]), &mut out);
        } else if let Some(base) = strip_accent(c) {
            push(base, &mut out);
        } else {
            pending_dash = true;
        }
    }
    out
}

/// The unaccented ASCII form of common Latin letters with diacritics.
fn strip_accent(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'å' | 'ā' | 'ă' | 'ą' | 'À' | 'Á' | 'Â' | 'Ã' | 'Å' | 'Ā' | 'Ă'
        | 'Ą' => "a",
        'æ' | 'Æ' => "ae",
        'ç' | 'ć' | 'č' | 'ĉ' | 'ċ' | 'Ç' | 'Ć' | 'Č' | 'Ĉ' | 'Ċ' => "c",
        'ď' | 'đ' | 'Ď' | 'Đ' | 'ð' | 'Ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' | 'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ė' | 'Ę'
        | 'Ě' => "e",
        'ğ' | 'ĝ' | 'ġ' | 'ģ' | 'Ğ' | 'Ĝ' | 'Ġ' | 'Ģ' => "g",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' | 'Ì' | 'Í' | 'Î' | 'Ï' | 'Ī' | 'Į' | 'İ' => {
            "i"
        }
        'ł' | 'ľ' | 'ĺ' | 'ļ' | 'Ł' | 'Ľ' | 'Ĺ' | 'Ļ' => "l",
        'ñ' | 'ń' | 'ň' | 'ņ' | 'Ñ' | 'Ń' | 'Ň' | 'Ņ' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ø' | 'ō' | 'ő' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ø' | 'Ō' | 'Ő' => {
            "o"
        }
        'œ' | 'Œ' => "oe",
        'ŕ' | 'ř' | 'Ŕ' | 'Ř' => "r",
        'ś' | 'š' | 'ş' | 'ș' | 'Ś' | 'Š' | 'Ş' | 'Ș' => "s",
        'ť' | 'ţ' | 'ț' | 'Ť' | 'Ţ' | 'Ț' => "t",
        'þ' | 'Þ' => "th",
        'ù' | 'ú' | 'û' | 'ū' | 'ů' | 'ű' | 'ų' | 'Ù' | 'Ú' | 'Û' | 'Ū' | 'Ů' | 'Ű' | 'Ų' => {
            "u"
        }
        'ý' | 'ÿ' | 'Ý' | 'Ÿ' => "y",
        'ź' | 'ż' | 'ž' | 'Ź' | 'Ż' | 'Ž' => "z",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::slugify;

    #[test]
    fn spec_examples() {
        for (input, want) in [
            ("Öffentliche Verwaltung", "oeffentliche-verwaltung"),
            ("🚀 Digitalisierung", "digitalisierung"),
            ("IT-Planungsrat", "it-planungsrat"),
            ("Straße & Brücke", "strasse-bruecke"),
            ("  OZG -- 2.0  ", "ozg-2-0"),
            ("Café Señor", "cafe-senor"),
            ("FIT-Connect", "fit-connect"),
            ("🚀", ""),
            ("ÄÖÜ", "aeoeue"),
        ] {
            assert_eq!(slugify(input), want, "{input}");
        }
    }
}
