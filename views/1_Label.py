"""The Label page: runs the packaged ``ralif/app/views/1_Label.py``.

The app ships inside the package (``pip install ralif``, then ``ralif app``); this file keeps
``streamlit run app.py`` and the page tests working in a source checkout. Edit the packaged file.
"""

from ralif.app import run_packaged

run_packaged("views/1_Label.py")
