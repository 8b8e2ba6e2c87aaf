import os

# Before anything can load torch: passive OpenMP waiting (see dlkit/cli.py for why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from dlkit.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
