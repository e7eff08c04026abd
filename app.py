"""Streamlit entry point for the ralif labeling app (``make app``)."""

import streamlit as st

import ralif

st.set_page_config(page_title="ralif", layout="wide")
st.title("ralif")
st.write(
    "Label images with active learning: ralif asks you to label the images whose labels are "
    "expected to help the model most, estimated with influence functions."
)
st.info("The labeling app is coming. For now, use the `ralif` command line.")
st.caption(f"ralif {ralif.__version__}")
