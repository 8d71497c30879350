"""The radiologist's app: everything that imports streamlit lives here."""
