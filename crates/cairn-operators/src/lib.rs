//! Cairn's typed operators on top of the engine core's `OperatorLogic`:
//! stateless transforms and process functions, keyed process functions with
//! keyed state and timers, windows, two-input (connect, broadcast) operators,
//! side outputs and sinks.

pub mod collector;
pub mod keyed;
mod keyed_core;
pub mod process;
pub mod sink;
pub mod timers;
pub mod two_input;
pub mod window;

pub use collector::OutputTag;
pub use keyed::{Key, KeyedContext, KeyedOpenContext, KeyedProcessFunction};
pub use process::{ProcessContext, ProcessFunction};
pub use sink::{Sink, SinkContext};
pub use timers::TimeDomain;
