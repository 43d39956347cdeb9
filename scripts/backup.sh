#!/usr/bin/env bash
# Back up Palate: the PostgreSQL database (pg_dump, one consistent snapshot) and
# the media files (images), into DEST/palate-<UTC time>/. See docs/backups.md.
#
#   DATABASE_URL=postgres://... scripts/backup.sh /backups
#
# MEDIA_ROOT defaults to Django's (DJANGO_MEDIA_ROOT or PALATE_DATA_DIR/media).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:?usage: scripts/backup.sh DEST_DIR}
: "${DATABASE_URL:?DATABASE_URL must point at the PostgreSQL database to back up}"
media=${MEDIA_ROOT:-$(scripts/_media_root.sh)}
[ -d "$media" ] || { echo "media folder $media does not exist" >&2; exit 2; }

out="$dest/palate-$(date -u +%Y%m%dT%H%M%SZ)"
tmp="$out.partial"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' ERR

# 1. The database first: pg_dump reads everything in one repeatable-read
#    snapshot, so counters and rows agree in the dump even while people rate.
pg_dump --format=custom --no-owner --no-privileges \
  --dbname="$DATABASE_URL" --file="$tmp/db.dump"
# 2. Then the media: an image file is written before its row commits and never
#    changed afterwards, so every file the dump refers to exists by now.
tar -C "$media" -czf "$tmp/media.tar.gz" .
(cd "$tmp" && sha256sum db.dump media.tar.gz >SHA256SUMS)
mv "$tmp" "$out"
trap - ERR
echo "$out"
