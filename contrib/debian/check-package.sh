#!/usr/bin/env bash
# Builds the Debian package and inspects it: its contents and control data, a clean
# install and purge on this machine (where systemd need not run), the installed unit
# (`systemd-analyze verify`, `security` at most 2.5) and `herold check` on the installed
# configuration. Needs root (or sudo) and cargo-deb.
set -euo pipefail
cd "$(dirname "$0")/../.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

cargo deb --locked --strip
deb=$(ls -t target/debian/herold_*.deb | head -n1)
echo "== $deb"
dpkg-deb -I "$deb"
contents=$(dpkg-deb -c "$deb")
echo "$contents"
for f in ./usr/bin/herold ./etc/herold/config.toml ./usr/lib/sysusers.d/herold.conf \
         ./usr/lib/tmpfiles.d/herold.conf ./usr/share/herold/templates/i18n/de.toml \
         ./usr/share/herold/templates/mail/digest.html; do
  grep -q " $f\$" <<<"$contents" || { echo "missing in the package: $f"; exit 1; }
done
grep -Eq " \./(usr/)?lib/systemd/system/herold\.service$" <<<"$contents" \
  || { echo "missing in the package: the systemd unit"; exit 1; }
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/herold/config.toml \
  || { echo "/etc/herold/config.toml is not a conffile"; exit 1; }

$SUDO dpkg -i "$deb"
unit=$(ls /usr/lib/systemd/system/herold.service /lib/systemd/system/herold.service 2>/dev/null | head -n1)
getent passwd herold >/dev/null || { echo "no user herold after install"; exit 1; }
[ -d /var/lib/herold/content ] || { echo "no /var/lib/herold/content after install"; exit 1; }
out=$(systemd-analyze verify "$unit" 2>&1) || { echo "$out"; exit 1; }
[ -z "$out" ] || { echo "systemd-analyze verify: $out"; exit 1; }
score=$(systemd-analyze security --offline=yes "$unit" 2>/dev/null \
  | sed -n 's/.*Overall exposure level for herold.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: $score"
awk -v s="$score" 'BEGIN { exit !(s != "" && s + 0 <= 2.5) }' || { echo "exposure $score > 2.5"; exit 1; }
if [ -z "$SUDO" ]; then AS_HEROLD=(runuser -u herold --); else AS_HEROLD=(sudo -u herold); fi
"${AS_HEROLD[@]}" /usr/bin/herold --config /etc/herold/config.toml check
$SUDO dpkg --purge herold
[ ! -e /usr/bin/herold ] || { echo "/usr/bin/herold left after purge"; exit 1; }
echo "package ok"
