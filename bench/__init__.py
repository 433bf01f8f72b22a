"""ngxws's benchmark suite: ngxws side by side with Nchan, aiohttp and websockets (see README.md)."""
