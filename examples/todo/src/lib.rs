//! syncline-todo
