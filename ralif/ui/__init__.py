"""Helpers shared by the Streamlit pages; the pages stay thin and call the library."""
