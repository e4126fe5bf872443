//! Coordination of a job across its attempts: the checkpoint coordinator
//! (triggering, acknowledgements, commit through `cairn-snapshot`'s protocol,
//! retention), checkpoint statistics, the job controller (attempts, restart
//! strategies, stop and cancel), restore planning, and the control surface
//! (`JobClient`) the REST server and embedding programs use.

pub mod checkpoint;
pub mod control;
pub mod controller;
pub mod restart;
pub mod restore;
pub mod statistics;
