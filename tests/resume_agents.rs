//! Resume anywhere with the real agent CLIs (SPEC.md §17): a session checked out, forked or
//! pulled for an agent opens in that agent, which sends its history to a stand-in model API on
//! 127.0.0.1; the turns it appends come back with `tapes push`.

mod agents;
