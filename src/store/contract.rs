//! The store contract, as tests every implementation runs.
