# dlkit.cli sets the OpenMP wait defaults before anything can load torch (see dlkit.core.threads).
from dlkit.cli import main

if __name__ == "__main__":
    main()
