/**
 * install.sh against a fake release served from 127.0.0.1: a tiny shell
 * "binary" per version, its tarball and SHA256SUMS, in a temporary HOME
 * and INSTALL_DIR.
 */
import assert from "node:assert/strict";
import { alive, missingTool, ROOT, runCommand, sha256, tempHome, waitFor } from "../helpers.ts";

const script = `${ROOT}install.sh`;

/** A shell stand-in for bal VERSION that records what it is asked to do. */
function fakeBal(version: string): string {
  return `#!/bin/sh
log() { echo "$*" >> "$BAL_HOME/fake.log"; }
case "$1" in
  --version) echo "bal ${version}" ;;
  init) mkdir -p "$BAL_HOME"; [ -f "$BAL_HOME/config.yaml" ] || echo "port: 9295" > "$BAL_HOME/config.yaml"; log "init ${version}" ;;
  stop) log "stop ${version}"; kill "$(cat "$BAL_HOME/bal.pid")"; rm -f "$BAL_HOME/bal.pid" ;;
  start) log "start ${version} $*" ;;
esac
`;
}

/** A release directory for `version`, with one tarball per platform. */
async function makeRelease(dir: string, version: string, versionFile = version): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const sums: string[] = [];
  for (const target of ["linux-amd64", "linux-arm64", "macos-amd64", "macos-arm64"]) {
    const stage = await Deno.makeTempDir();
    await Deno.writeTextFile(`${stage}/bal`, fakeBal(version), { mode: 0o755 });
    const tarball = `bal-${target}.tar.gz`;
    const tar = await new Deno.Command("tar", {
      args: ["-czf", `${dir}/${tarball}`, "-C", stage, "bal"],
    }).output();
    assert.ok(tar.success);
    sums.push(`${sha256(await Deno.readFile(`${dir}/${tarball}`))}  ${tarball}`);
    await Deno.remove(stage, { recursive: true });
  }
  await Deno.writeTextFile(`${dir}/SHA256SUMS`, sums.join("\n") + "\n");
  await Deno.writeTextFile(`${dir}/VERSION`, `${versionFile}\n`);
}

interface Server {
  base: string;
  /** Request paths served, in order. */
  requests: string[];
  /** Serves another directory from now on. */
  use(dir: string): void;
  close(): Promise<void>;
}

function serveDir(dir: string): Server {
  let root = dir;
  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    requests.push(path);
    try {
      return new Response(await Deno.readFile(`${root}${path}`));
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return {
    base: `http://127.0.0.1:${server.addr.port}`,
    requests,
    use: (d) => (root = d),
    close: () => server.shutdown(),
  };
}

interface Env {
  home: string;
  installDir: string;
  vars: Record<string, string>;
}

function setup(server: Server, extra: Record<string, string> = {}): Env {
  // Removed when the test process exits, as every test's home is.
  const home = tempHome();
  const installDir = `${home}/bin`;
  return {
    home,
    installDir,
    vars: {
      HOME: home,
      INSTALL_DIR: installDir,
      BAL_DOWNLOAD_BASE: server.base,
      BAL_UNAME_S: "Linux",
      BAL_UNAME_M: "x86_64",
      PATH: Deno.env.get("PATH")!,
      ...extra,
    },
  };
}

const install = (env: Env, ...args: string[]) =>
  runCommand("bash", [script, ...args], { env: env.vars, clearEnv: true });

async function installedVersion(env: Env): Promise<string> {
  const out = await new Deno.Command(`${env.installDir}/bal`, { args: ["--version"] }).output();
  return new TextDecoder().decode(out.stdout).trim().replace(/^bal /, "");
}

/** A fake release server for one test. */
async function withRelease(
  fn: (server: Server, dirs: { v1: string; v2: string }) => Promise<void>,
) {
  const root = await Deno.makeTempDir({ prefix: "bal-release-" });
  const dirs = { v1: `${root}/v1`, v2: `${root}/v2` };
  await makeRelease(dirs.v1, "1.0.0");
  await makeRelease(dirs.v2, "1.1.0");
  const server = serveDir(dirs.v1);
  try {
    await fn(server, dirs);
  } finally {
    await server.close();
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("install.sh: --help", async () => {
  const out = await new Deno.Command("bash", { args: [script, "--help"] }).output();
  assert.equal(out.code, 0);
  const text = new TextDecoder().decode(out.stdout);
  for (
    const word of [
      "--uninstall",
      "--purge",
      "BAL_VERSION",
      "INSTALL_DIR",
      "BAL_REPO",
      "BAL_DOWNLOAD_BASE",
    ]
  ) {
    assert.ok(text.includes(word), word);
  }
  const bad = await new Deno.Command("bash", {
    args: [script, "--frob"],
    stdout: "null",
    stderr: "null",
  }).output();
  assert.equal(bad.code, 2);
});

Deno.test(
  { name: "install.sh: is shellcheck clean", ignore: missingTool("shellcheck") },
  async () => {
    const out = await new Deno.Command("shellcheck", { args: [script] }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stdout));
  },
);

Deno.test("install.sh: fresh install, then a same-version run downloads nothing", async () => {
  await withRelease(async (server) => {
    const env = setup(server);
    const r = await install(env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await installedVersion(env), "1.0.0");
    assert.match(r.stdout, new RegExp(`installed bal 1\\.0\\.0 to ${env.installDir}/bal`));
    assert.match(r.stdout, /add .*\/bin to your PATH/);
    assert.equal(Deno.readTextFileSync(`${env.home}/.bal/config.yaml`), "port: 9295\n");
    assert.ok(server.requests.includes("/bal-linux-amd64.tar.gz"));

    server.requests.length = 0;
    const again = await install(env);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /bal 1\.0\.0 is already installed/);
    assert.deepEqual(server.requests, ["/VERSION"]);
  });
});

Deno.test("install.sh: a release that says v1.0.0 is the same as an installed 1.0.0", async () => {
  await withRelease(async (server, dirs) => {
    const env = setup(server);
    assert.equal((await install(env)).code, 0);
    await Deno.writeTextFile(`${dirs.v1}/VERSION`, "v1.0.0\n");
    server.requests.length = 0;
    const r = await install(env);
    assert.match(r.stdout, /already installed/);
    assert.deepEqual(server.requests, ["/VERSION"]);
  });
});

Deno.test("install.sh: updates to a newer release, keeping the config", async () => {
  await withRelease(async (server, dirs) => {
    const env = setup(server);
    assert.equal((await install(env)).code, 0);
    await Deno.writeTextFile(`${env.home}/.bal/config.yaml`, "edited\n");
    server.use(dirs.v2);
    const r = await install(env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /installed bal 1\.1\.0 to .* \(was 1\.0\.0\)/);
    assert.equal(await installedVersion(env), "1.1.0");
    assert.equal(Deno.readTextFileSync(`${env.home}/.bal/config.yaml`), "edited\n");
  });
});

Deno.test("install.sh: a bad checksum is refused and the installed binary stays", async () => {
  await withRelease(async (server, dirs) => {
    const env = setup(server);
    assert.equal((await install(env)).code, 0);
    const sums = Deno.readTextFileSync(`${dirs.v2}/SHA256SUMS`).replace(
      /^[0-9a-f]{8}/gm,
      "00000000",
    );
    Deno.writeTextFileSync(`${dirs.v2}/SHA256SUMS`, sums);
    server.use(dirs.v2);
    const r = await install(env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /checksum mismatch for bal-linux-amd64\.tar\.gz .*refusing to install/);
    assert.equal(await installedVersion(env), "1.0.0");

    Deno.writeTextFileSync(`${dirs.v2}/SHA256SUMS`, "");
    const missing = await install(env);
    assert.equal(missing.code, 1);
    assert.match(
      missing.stderr,
      /SHA256SUMS has no entry for bal-linux-amd64\.tar\.gz; refusing to install/,
    );
  });
});

Deno.test("install.sh: picks the asset for the platform and refuses unsupported ones", async () => {
  await withRelease(async (server) => {
    const mac = setup(server, { BAL_UNAME_S: "Darwin", BAL_UNAME_M: "arm64" });
    assert.equal((await install(mac)).code, 0);
    assert.ok(server.requests.includes("/bal-macos-arm64.tar.gz"));
    const arm = setup(server, { BAL_UNAME_M: "aarch64" });
    assert.equal((await install(arm)).code, 0);
    assert.ok(server.requests.includes("/bal-linux-arm64.tar.gz"));

    const bsd = await install(await setup(server, { BAL_UNAME_S: "FreeBSD" }));
    assert.equal(bsd.code, 1);
    assert.match(
      bsd.stderr,
      /unsupported operating system: FreeBSD \(bal runs on Linux and macOS\)/,
    );
    const riscv = await install(await setup(server, { BAL_UNAME_M: "riscv64" }));
    assert.equal(riscv.code, 1);
    assert.match(riscv.stderr, /unsupported architecture: riscv64 on linux/);
  });
});

Deno.test("install.sh: --uninstall keeps the config, --purge removes it", async () => {
  await withRelease(async (server) => {
    const env = setup(server);
    assert.equal((await install(env)).code, 0);
    const u = await install(env, "--uninstall");
    assert.equal(u.code, 0, u.stderr);
    assert.throws(() => Deno.statSync(`${env.installDir}/bal`));
    assert.match(u.stdout, /kept .*config\.yaml \(use --purge to remove it\)/);
    assert.ok(Deno.statSync(`${env.home}/.bal/config.yaml`).isFile);

    assert.equal((await install(env)).code, 0);
    const p = await install(env, "--purge");
    assert.equal(p.code, 0, p.stderr);
    assert.throws(() => Deno.statSync(`${env.installDir}/bal`));
    assert.throws(() => Deno.statSync(`${env.home}/.bal`));
  });
});

Deno.test("install.sh: a running daemon is stopped before the update and started after", async () => {
  await withRelease(async (server, dirs) => {
    const env = setup(server);
    assert.equal((await install(env)).code, 0);
    const daemon = new Deno.Command("sleep", { args: ["30"] }).spawn();
    try {
      Deno.writeTextFileSync(`${env.home}/.bal/bal.pid`, `${daemon.pid}\n`);
      Deno.writeTextFileSync(
        `${env.home}/.bal/bal.state.json`,
        JSON.stringify({ pid: daemon.pid, config_path: "/etc/bal/prod.yaml" }, null, 2),
      );
      server.use(dirs.v2);
      const r = await install(env);
      assert.equal(r.code, 0, r.stderr);
      await waitFor("the old daemon to stop", () => !alive(daemon.pid));
      const log = Deno.readTextFileSync(`${env.home}/.bal/fake.log`).trim().split("\n");
      assert.deepEqual(log.slice(-3), [
        "stop 1.0.0",
        "init 1.1.0",
        "start 1.1.0 start -d -c /etc/bal/prod.yaml",
      ]);
    } finally {
      try {
        daemon.kill("SIGKILL");
      } catch {
        // stopped by the installer
      }
      await daemon.status;
    }
  });
});
