"""Small applications the tests run in real servers (gunicorn)."""
