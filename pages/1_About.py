"""About page: what the method is and where it comes from."""

import streamlit as st

import ralif

st.title("About ralif")
st.markdown(
    "ralif implements **RALIF** from Xia & Henao, *Reliable Active Learning via Influence "
    "Functions*, TMLR 2023: each cycle it uses influence functions to estimate how much labeling "
    "each unlabeled image would help the classifier, and asks for labels where the expected "
    "benefit is largest."
)
st.caption(f"ralif {ralif.__version__}")
