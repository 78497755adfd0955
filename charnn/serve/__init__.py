"""`charnn serve`: a trained model behind HTTP (uvicorn + Starlette, the `serve` extra).

- serve.server: running it (the socket, uvicorn, Ctrl-C) and checking the extra is installed;
- serve.app: the routes, torch-rnn-server's and charnn's own;
- serve.requests: what a client may ask for, checked;
- serve.engine: the worker that schedules every running request onto generation.rows.
"""
