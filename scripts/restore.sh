#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh into a FRESH database and media folder.
#
#   createdb palate_restored
#   DATABASE_URL=postgres://.../palate_restored MEDIA_ROOT=/srv/media \
#     scripts/restore.sh /backups/palate-20261127T093000Z
#
# Refuses a database that already has tables, or a media folder with files in it.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: scripts/restore.sh BACKUP_DIR}
: "${DATABASE_URL:?DATABASE_URL must point at an empty PostgreSQL database}"
media=${MEDIA_ROOT:-$(scripts/_media_root.sh)}

(cd "$src" && sha256sum --quiet -c SHA256SUMS) || {
  echo "checksums do not match: $src is damaged" >&2
  exit 2
}
tables=$(psql "$DATABASE_URL" -Atc \
  "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
if [ "$tables" != "0" ]; then
  echo "the target database has $tables tables; restore into a fresh one" >&2
  exit 2
fi
mkdir -p "$media"
if [ -n "$(ls -A "$media")" ]; then
  echo "media folder $media is not empty; restore into a fresh one" >&2
  exit 2
fi
# All or nothing: one transaction, stop at the first error.
pg_restore --no-owner --no-privileges --exit-on-error --single-transaction \
  --dbname="$DATABASE_URL" "$src/db.dump"
tar -C "$media" -xzf "$src/media.tar.gz"
psql "$DATABASE_URL" -Atc "SELECT 'restored: ' || count(*) || ' ratings, ' \
  || (SELECT count(*) FROM annotation_image) || ' images' FROM annotation_rating"
echo "Now check it: DATABASE_URL=... manage.py check_integrity"
