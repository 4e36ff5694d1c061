//! The bridge-site kernel gateway: a Jupyter Enterprise Gateway-compatible REST and WebSocket API.
