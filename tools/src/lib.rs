//! Demo and simulators; see `src/bin/`.
