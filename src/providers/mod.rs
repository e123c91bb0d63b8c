//! Payment providers: their wire protocols (`protocol`, pure) and the connectors that talk to
//! them.

pub mod protocol;
