"""Write 40 content files of random hostile text (markup, entities, controls, emoji) into
DIR, for validating feeds on inputs nobody picked by hand.

usage: random-items.py DIR SEED"""
import random, os, sys
random.seed(int(sys.argv[2]))
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
pieces = ['&', '<', '>', ']]>', '"', "'", 'ä', 'Ö', 'ß', '🚀', '\x01', '\x0b', '\u2028', '\u00a0', '&amp;', '&#x26;', '<b>', '</i>', '<script>', 'javascript:', 'Wort', 'OZG', ' ', '  ', '\t', '%', '\\', '{{', '}}', '<!--', '-->', '<![CDATA[', '&nbsp;', '\ufeff', 'x' * 40]
def rnd(n): return ''.join(random.choice(pieces) for _ in range(n))
def tq(s):  # TOML basic string
    return '"' + ''.join(c if c not in '"\\' and ord(c) >= 0x20 and c != '\x7f' else '\\u%04x' % ord(c) for c in s) + '"'
for i in range(40):
    title = rnd(random.randint(1, 8)) + ' Titel %d' % i
    tags = [rnd(random.randint(1, 3)) + random.choice(['', ' OZG', ' Verwaltung']) for _ in range(random.randint(0, 4))]
    body = '\n\n'.join(rnd(random.randint(3, 30)) for _ in range(random.randint(1, 5)))
    body += '\n\n<a href="../x?a=1&b=2">rel</a> <img src="bild %d.png" onerror=x> [md](/pfad/%d "t&") <iframe src=//evil></iframe> <svg><script>1</script></svg> <object data=x></object> <embed src=y>' % (i, i)
    date = '2026-%02d-%02dT%02d:%02d:00' % (random.randint(1, 11), random.randint(1, 28), random.randint(0, 23), random.choice([0, 30]))
    fm = '+++\ntitle = %s\ndate = "%s"\nslug = "r%d"\ntags = [%s]\ncategory = %s\nsummary = %s\n+++\n' % (tq(title), date, i, ', '.join(tq(t) for t in tags), tq(rnd(2) + 'Kat'), tq(rnd(5)) if i % 2 else tq(''))
    open(os.path.join(out, 'r%d.md' % i), 'w', encoding='utf-8').write(fm + body)
