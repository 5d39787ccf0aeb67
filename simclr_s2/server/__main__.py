"""`python -m simclr_s2.server start|stop|status|restart-mlflow|stop-mlflow|env`."""

import sys

from simclr_s2.server.control import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m simclr_s2.server"))
