"""From a suite file to cells: reading and validating the TOML (:mod:`harness.planning.suite`) and expanding it into
task × strategy × model × seed cells with exclusions and skip reasons (:mod:`harness.planning.plan`). No torch."""
