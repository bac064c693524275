#!/usr/bin/env python3
"""A TCP proxy that adds latency without cutting throughput, for benchmarks/cold-start.sh.

This kernel has no sch_netem, so the round-trip delay the benchmark wants is added here instead of by `tc netem`:
every segment read from one side is released to the other side DELAY_MS after it arrived, independently per
direction (so a request/response exchange pays 2 x DELAY_MS more, and so does opening a connection). Reading never waits for the delayed writes (a
per-direction queue sits in between), so a long transfer still runs at the link's rate; only when a peer stops
reading does the queue fill (capped, then reading pauses) -- ordinary TCP back-pressure.

It also counts the bytes it forwards in each direction. A connection to the control port gets one line,
"<bytes upstream->client> <bytes client->upstream> <connections> <HTTP requests>\\n", and is closed; the benchmark reads it
before and after each side to know what each side fetched from the registry.

With TIMELINE_FILE it also appends "<unix time> <bytes upstream->client so far>" at most every 20 ms while bytes
flow, so the benchmark can draw what each side fetched against time.

usage: delay-proxy.py LISTEN_HOST:PORT UPSTREAM_HOST:PORT CONTROL_PORT DELAY_MS [TIMELINE_FILE]
"""
import asyncio
import sys
import time

MAX_QUEUED = 32 << 20      # bytes buffered per direction before reading pauses
READ_SIZE = 256 << 10

stats = {"down": 0, "up": 0, "conns": 0, "requests": 0}
timeline = {"file": None, "last": 0.0}


def note_timeline():
    """One timeline sample per 20 ms at most: the plot needs the shape, not every segment."""
    f = timeline["file"]
    now = time.time()
    if f is not None and now - timeline["last"] >= 0.02:
        timeline["last"] = now
        f.write(f"{now:.3f} {stats['down']}\n")
        f.flush()
METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"PATCH ")


async def pump(reader, writer, delay, key):
    """Forwards reader -> writer, each segment released `delay` seconds after it was read."""
    queue = asyncio.Queue()
    room = asyncio.Condition()
    queued = 0

    async def release():
        nonlocal queued
        while True:
            arrived, data = await queue.get()
            if data is None:
                break
            wait = arrived + delay - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
            stats[key] += len(data)
            if key == "down":
                note_timeline()
            async with room:
                queued -= len(data)
                room.notify_all()
        if writer.can_write_eof():
            writer.write_eof()

    sender = asyncio.ensure_future(release())
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            async with room:
                while queued > MAX_QUEUED and not sender.done():
                    await room.wait()
                queued += len(data)
            if sender.done():
                break
            if key == "up" and data.startswith(METHODS):
                # HTTP/1.1 requests on a connection are sequential, so a new one starts a segment: this counts them
                # (near enough: a request split before its method would be missed).
                stats["requests"] += 1
            queue.put_nowait((time.monotonic(), data))
        queue.put_nowait((time.monotonic(), None))
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
        raise


async def handle(client_reader, client_writer, upstream, delay):
    stats["conns"] += 1
    host, port = upstream
    try:
        # A real link costs a round trip for the TCP handshake before the first request byte can go out.
        await asyncio.sleep(2 * delay)
        up_reader, up_writer = await asyncio.open_connection(host, port)
    except OSError:
        client_writer.close()
        return
    tasks = [asyncio.ensure_future(pump(client_reader, up_writer, delay, "up")),
             asyncio.ensure_future(pump(up_reader, client_writer, delay, "down"))]
    try:
        # If one direction fails (reset), tear the whole connection down; a clean EOF just half-closes.
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in pending:
            t.cancel()
        for t in tasks:
            if t.done() and not t.cancelled():
                t.exception()  # consume it
    finally:
        for w in (client_writer, up_writer):
            w.close()


async def control(_reader, writer):
    writer.write(f"{stats['down']} {stats['up']} {stats['conns']} {stats['requests']}\n".encode())
    await writer.drain()
    writer.close()


def split(hostport):
    host, _, port = hostport.rpartition(":")
    return host, int(port)


async def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__.strip().splitlines()[-1])
    if len(sys.argv) == 6:
        timeline["file"] = open(sys.argv[5], "a", encoding="ascii")
    listen, upstream, control_port, delay_ms = split(sys.argv[1]), split(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    delay = delay_ms / 1000.0
    server = await asyncio.start_server(lambda r, w: handle(r, w, upstream, delay), listen[0], listen[1])
    ctl = await asyncio.start_server(control, listen[0], control_port)
    async with server, ctl:
        await asyncio.gather(server.serve_forever(), ctl.serve_forever())


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
