"""`python -m mgft_train` and `torchrun -m mgft_train`."""

import os
import sys

from mgft_train.main import main

code = main()
# Leave without C++ static destructors: gloo's can deadlock at interpreter exit (seen here
# under load: a worker whose main() had returned waited in a futex for an hour, holding
# torchrun and the job). Everything the trainer writes is closed by now; a crash above
# still exits the normal way, with its traceback.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
