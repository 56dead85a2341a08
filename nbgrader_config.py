"""nbgrader configuration for the course (see the instructor guide, chapters/appendices/instructor.md).

The repository root is the course directory (run nbgrader from there): `solutions/<assignment>/` holds the source notebooks
(solutions and hidden tests), `_release/` the generated student versions, `submitted/`,
`autograded/` and `feedback/` the grading folders (all three ignored by git).
"""

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "_release"

c.ClearSolutions.code_stub = dict(python="# YOUR CODE HERE\nraise NotImplementedError()")
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
