#!/usr/bin/env bash
# Move the Streamlit app into the package, so that `pip install ralif` ships it and `ralif app` runs it.
#
#   scripts/package_pages.sh            # from anywhere inside the repository
#
# What it does (in a git checkout with `git mv`, so history follows the files; elsewhere with `mv`):
#   app.py             -> ralif/app/app.py
#   views/N_Name.py    -> ralif/app/views/N_Name.py    (every numbered page)
#   assets/demo/       -> ralif/app/assets/demo/       (the demo's images and embeddings)
#   .streamlit/config.toml is copied to ralif/app/.streamlit/config.toml: `ralif app` runs from
#   the package folder and reads it there; the top-level copy stays for `streamlit run app.py`
#   (tests/test_packaging.py checks that the two copies are identical).
# and leaves a thin top-level app.py and views/N_Name.py that run the packaged files with
# `ralif.app.run_packaged`, so `streamlit run app.py`, the browser tests and the page tests
# (AppTest.from_file("views/1_Label.py")) keep working and run the code that is installed.
#
# The app's own paths need no edit: its page list is globbed beside the packaged app.py, and the
# paths it hands to st.Page and st.switch_page ("views/1_Label.py") are resolved by Streamlit
# against the main script's folder, which holds a views/ folder in both layouts (the packaged
# pages when `ralif app` runs ralif/app/app.py, the thin ones when `streamlit run app.py` runs in
# a checkout). The folder is not called pages: Streamlit would list that one itself, and a new
# server's first page would show that listing instead of the app's navigation.
#
# It then points the code that found the demo at the repository's assets/demo to the packaged copy,
# and lets ralif/app import streamlit in tests/test_layout.py.
#
# Re-runnable: a file already moved is left alone, so a second run changes nothing. It stops, changing
# nothing more, where a top-level file is not a thin wrapper although its packaged copy exists (both
# were edited: merge them by hand, then run it again).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
APP=ralif/app

if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  move() { mkdir -p "$(dirname "$2")"; git mv "$1" "$2"; }
  track() { git add "$@"; }
else
  move() { mkdir -p "$(dirname "$2")"; mv "$1" "$2"; }
  track() { :; }
fi

is_thin() { grep -q "run_packaged(" "$1" 2>/dev/null; }

# thin FILE RELATIVE TITLE: a top-level stand-in that runs the packaged RELATIVE path.
thin() {
  cat >"$1" <<EOF
"""$3: runs the packaged \`\`ralif/app/$2\`\`.

The app ships inside the package (\`\`pip install ralif\`\`, then \`\`ralif app\`\`); this file keeps
\`\`streamlit run app.py\`\` and the page tests working in a source checkout. Edit the packaged file.
"""

from ralif.app import run_packaged

run_packaged("$2")
EOF
  track "$1"
}

test -f "$APP/__init__.py" || { echo "package_pages: $APP/__init__.py is missing (run from a checkout of ralif)" >&2; exit 1; }

# 1. The entry script.
if is_thin app.py; then
  echo "app.py: already a thin wrapper"
elif [ -e "$APP/app.py" ]; then
  echo "package_pages: both app.py and $APP/app.py hold the app; merge them by hand first" >&2; exit 1
else
  move app.py "$APP/app.py"
  thin app.py app.py "Entry point of the ralif labeling app"
  echo "app.py -> $APP/app.py"
fi

# 2. The numbered pages.
for page in views/[0-9]*.py; do
  [ -e "$page" ] || continue
  name=$(basename "$page")
  if is_thin "$page"; then
    continue
  elif [ -e "$APP/views/$name" ]; then
    echo "package_pages: both $page and $APP/views/$name hold the page; merge them by hand first" >&2; exit 1
  fi
  move "$page" "$APP/views/$name"
  title=$(echo "${name%.py}" | sed -E 's/^[0-9]+_*//; s/_/ /g')
  thin "$page" "views/$name" "The $title page"
  echo "$page -> $APP/views/$name"
done
# A page added to the package later gets its top-level stand-in as well.
for packaged in "$APP"/views/[0-9]*.py; do
  [ -e "$packaged" ] || continue
  name=$(basename "$packaged")
  if [ ! -e "views/$name" ]; then
    mkdir -p views
    title=$(echo "${name%.py}" | sed -E 's/^[0-9]+_*//; s/_/ /g')
    thin "views/$name" "views/$name" "The $title page"
    echo "views/$name: thin wrapper added"
  fi
done

# 3. Streamlit settings, read from the folder `ralif app` runs in.
mkdir -p "$APP/.streamlit"
if ! cmp -s .streamlit/config.toml "$APP/.streamlit/config.toml"; then
  cp .streamlit/config.toml "$APP/.streamlit/config.toml"
  track "$APP/.streamlit/config.toml"
  echo ".streamlit/config.toml copied to $APP/.streamlit/"
fi

# 4. The demo's data, and every path that named its old place.
if [ -d assets/demo ] && [ ! -e "$APP/assets/demo" ]; then
  move assets/demo "$APP/assets/demo"
  rmdir assets 2>/dev/null || true
  echo "assets/demo -> $APP/assets/demo"
fi
"$PY" - "$ROOT" <<'EOF'
import re
import sys
from pathlib import Path

root = Path(sys.argv[1])
changed = []

def edit(rel: str, pairs: list[tuple[str, str]]) -> None:
    path = root / rel
    if not path.is_file():
        return
    text = new = path.read_text(encoding="utf-8")
    for pattern, repl in pairs:
        new = re.sub(pattern, repl, new)
    if new != text:
        path.write_text(new, encoding="utf-8")
        changed.append(rel)

# The project code: ralif/project/session.py sits one folder below the package root.
edit("ralif/project/session.py", [
    (r'parents\[2\] / "assets" / "demo"', 'parents[1] / "app/assets/demo"'),
    (r"``assets/demo``", "``ralif/app/assets/demo``"),
])
# Tests and benchmarks name it from the repository root.
users = [*sorted((root / "tests").glob("*.py")), *sorted((root / "benchmarks").glob("*.py"))]
for path in users:
    edit(str(path.relative_to(root)), [
        (r'(ROOT|REPO|parents\[1\]|parent\.parent) / "assets" / "demo"', r'\1 / "ralif/app/assets/demo"'),
        (r"(?<![\w/])assets/demo\b", "ralif/app/assets/demo"),
    ])
# The layout test lets the app import streamlit; the packaged app is the app.
edit("tests/test_layout.py", [
    (r'allowed = \(ROOT / "ralif" / "ui", ROOT / "views", ROOT / "app.py"\)',
     'allowed = (ROOT / "ralif" / "ui", ROOT / "ralif" / "app", ROOT / "views", ROOT / "app.py")'),
    (r"imported only by the app \(``ralif/ui/``, ``views/``, ``app.py``\)",
     "imported only by the app (``ralif/ui/``, ``ralif/app/``, ``views/``, ``app.py``)"),
])
for rel in changed:
    print(f"{rel}: paths updated")

# What is left naming the old place is reported, not guessed at.
left = []
for path in [*users, *sorted((root / "ralif").rglob("*.py"))]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        old = re.search(r'(?<![\w/])assets/demo|"assets" / "demo"', line)
        if old and "ralif/app/assets" not in line and '"app" / "assets"' not in line:
            left.append(f"  {path.relative_to(root)}:{number}: {line.strip()}")
if left:
    print("still naming assets/demo (check by hand):\n" + "\n".join(left))
EOF
echo "done. Review the changes (git status, git diff), then: python -m pytest -q tests/test_packaging.py tests/test_app.py tests/test_layout.py, then the whole suite."
