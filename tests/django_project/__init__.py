"""A minimal Django project on redisguard.django, for tests/test_django*.py and gunicorn."""
