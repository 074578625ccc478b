// A sample HTTP backend for trying bal: answers every request with JSON that
// names its port, and logs each request. Runs under node and Deno alike.
//
//   node backend.js 9000            (or: deno run --allow-net backend.js 9000)
import { createServer } from "node:http";
import process from "node:process";

const port = Number(process.argv[2] ?? process.env.PORT ?? 9000);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`backend: invalid port "${process.argv[2]}"; usage: node backend.js PORT`);
  process.exit(1);
}

let served = 0;
const server = createServer((req, res) => {
  served++;
  const body = JSON.stringify({
    backend: `127.0.0.1:${port}`,
    port,
    pid: process.pid,
    request: served,
    method: req.method,
    path: req.url,
  });
  console.log(`[backend ${port}] ${req.method} ${req.url} from ${req.socket.remoteAddress}`);
  res.writeHead(200, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body) + 1,
  });
  res.end(body + "\n");
});

server.on("error", (err) => {
  console.error(`backend: cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});
server.listen(
  port,
  "127.0.0.1",
  () => console.log(`[backend ${port}] listening on 127.0.0.1:${port}`),
);

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
