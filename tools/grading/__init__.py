"""Sandboxed grading for the course's nbgrader assignments (instructor guide: the appendix
``chapters/appendices/instructor.md``).

The pieces, from the bottom up:

* :mod:`sandbox`: the Bubblewrap command line that confines one kernel (no course folder, no
  network, capped memory, processes and disk; every process ends with the kernel);
* :mod:`guard`: code run inside that kernel before any student code, which restores what a cell
  may have patched before each test cell and reports it;
* :mod:`execute`: nbgrader's execution step, replaced by one that runs the kernel in the sandbox,
  calls the guard around test cells and turns every limit into a recorded outcome;
* :mod:`intake`: checks and normalises a submitted notebook before nbgrader reads it, and reads
  its code for constructs that a reviewer should look at;
* :mod:`feedback`: keeps hidden tests out of the feedback;
* ``tools/grade.py``: the command ``make grade`` runs, which grades a batch with all of these.
"""
