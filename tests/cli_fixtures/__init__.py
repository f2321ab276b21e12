"""Small pipeline modules that tests/test_cli.py points the ``flowstone`` command at.

Each module builds its pipeline without a store, so the store comes from
``$FLOWSTONE_DATABASE_URL`` / ``$FLOWSTONE_HOME``, which every test points at its own tmp folder.
"""
