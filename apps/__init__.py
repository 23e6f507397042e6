"""What a person talks to: the terminal chat and the Streamlit web demo."""
