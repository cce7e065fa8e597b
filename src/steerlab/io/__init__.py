"""Reading and writing: prompt sets."""
