"""What users run, above the library: the guide comparison (the main job), the 2-D demo,
the command line, their plots, and the bundled models they run on.

The comparison and plots need the ``plots`` extra (matplotlib) and the bundled real-data
models the ``data`` extra (scikit-learn): ``pip install 'flowguide[apps]'`` installs both.
"""
