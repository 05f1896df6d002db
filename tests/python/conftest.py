import os
import sys

# Workers are spawned and import test modules by name.
sys.path.insert(0, os.path.dirname(__file__))
