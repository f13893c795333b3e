"""Print the pinned requirements of pyproject.toml (dependencies + the named extras), one per line.

The images install these before they copy the source, so the dependency layers stay cached
while operator/ changes: `python pyproject_requirements.py pyproject.toml [EXTRA ...]`.
"""

import sys
import tomllib

with open(sys.argv[1], "rb") as file:
    project = tomllib.load(file)["project"]
requirements = list(project["dependencies"])
for extra in sys.argv[2:]:
    requirements += project["optional-dependencies"][extra]
print("\n".join(requirements))
