"""The Classes page: runs the packaged ``ralif/app/views/5_Classes.py``.

The app ships inside the package (``pip install ralif``, then ``ralif app``); this file keeps
``streamlit run app.py`` and the page tests working in a source checkout. Edit the packaged file.
"""

from ralif.app import run_packaged

run_packaged("views/5_Classes.py")
