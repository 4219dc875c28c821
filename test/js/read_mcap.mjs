// Reads MCAP files with @mcap/core (the library Foxglove and Lichtblick read with) and
// prints one JSON line per file: messages and a SHA-256 of their payloads per topic (in
// log-time order, through the summary and indexes), each chunk's compression, and the
// record count of a full stream pass that validates every CRC.
import { McapIndexedReader, McapStreamReader } from "@mcap/core";
import { FileHandleReadable } from "@mcap/nodejs";
import zstd from "@foxglove/wasm-zstd";
import { createHash } from "node:crypto";
import { open, readFile } from "node:fs/promises";

await zstd.isLoaded;
const decompressHandlers = { zstd: (data, size) => zstd.decompress(data, Number(size)) };

for (const path of process.argv.slice(2)) {
  const fh = await open(path, "r");
  const reader = await McapIndexedReader.Initialize({
    readable: new FileHandleReadable(fh),
    decompressHandlers,
  });
  const topics = {};
  for await (const m of reader.readMessages()) {
    const topic = reader.channelsById.get(m.channelId).topic;
    const t = (topics[topic] ??= { count: 0, hash: createHash("sha256") });
    t.count += 1;
    t.hash.update(m.data);
  }
  await fh.close();
  const stream = new McapStreamReader({ validateCrcs: true, decompressHandlers });
  stream.append(await readFile(path));
  let records = 0;
  while (stream.nextRecord()) records += 1;
  const out = {
    path,
    chunks: reader.chunkIndexes.map((c) => c.compression),
    topics: Object.fromEntries(
      Object.entries(topics).map(([k, v]) => [k, { count: v.count, sha256: v.hash.digest("hex") }]),
    ),
    stream_records: records,
    stream_done: stream.done(),
  };
  console.log(JSON.stringify(out));
}
