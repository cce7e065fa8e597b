#!/usr/bin/env bash
# Build the documentation site into site/ with `mkdocs build --strict` (a warning, a broken link
# or a missing reference fails the build). Sets up .venv first (scripts/setup.sh) and adds the
# docs extra; extra arguments go to mkdocs build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! .venv/bin/python -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null; then
  .venv/bin/python -m pip install -q -e ".[docs]"
fi
# mkdocs-material >= 9.7 prints a notice about MkDocs 2.0 on every build; it is not about this site.
export NO_MKDOCS_2_WARNING=1
.venv/bin/python -m mkdocs build --strict "$@"
echo "site built in $PWD/site: open site/index.html, or serve it: .venv/bin/python -m http.server -d site"
