// Real processes for the client's tests: the gateway binary (GATEWAY_BIN, else the workspace's
// target/debug/gateway) and, for PostgreSQL mode, testkit-postgres (TESTKIT_POSTGRES_BIN, else
// target/debug/testkit-postgres), each on a free port of 127.0.0.1, stopped when the test ends.

import { spawn, type ChildProcess } from "node:child_process";
import { createHmac } from "node:crypto";
import { createServer } from "node:net";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

import type { WebSocketFactory, WebSocketLike } from "../src/index.js";

const repo = resolve(fileURLToPath(import.meta.url), "../../../../..");
export const SECRET = "switchboard-typescript-client-test-secret-0123456789";

/** Waits until `check` holds, polling; fails after `ms`. */
export async function until(check: () => boolean, ms = 20_000, what = "the condition"): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

/** An HS256 token for `user`, expiring `ttlSecs` from now. */
export function mint(user: string, ttlSecs = 3_600): string {
  const now = Math.floor(Date.now() / 1000);
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const head = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub: user, name: user, iat: now, exp: now + ttlSecs })}`;
  const signature = createHmac("sha256", SECRET).update(head).digest("base64url");
  return `${head}.${signature}`;
}

/** The `ws` package as the client's WebSocket. */
export const nodeWebSocket: WebSocketFactory = (url, protocols) =>
  new WebSocket(url, protocols) as unknown as WebSocketLike;

export class Gateway {
  readonly port: number;
  readonly #env: Record<string, string>;
  #child: ChildProcess | undefined;
  #log: string[] = [];

  private constructor(port: number, env: Record<string, string>) {
    this.port = port;
    this.#env = env;
  }

  /** Starts the gateway with `env` on a free port and waits for `/readyz`. */
  static async start(env: Record<string, string> = {}): Promise<Gateway> {
    const gateway = new Gateway(await freePort(), env);
    await gateway.restart();
    return gateway;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get log(): string {
    return this.#log.join("");
  }

  /** Starts it again on the same port (after `kill`). */
  async restart(): Promise<void> {
    const bin = process.env.GATEWAY_BIN ?? resolve(repo, "target/debug/gateway");
    const child = spawn(bin, [], {
      env: {
        PATH: process.env.PATH ?? "",
        SWITCHBOARD_LISTEN: `127.0.0.1:${this.port}`,
        SWITCHBOARD_JWT_SECRET: SECRET,
        SWITCHBOARD_LOG: "warn",
        ...this.#env,
      },
      stdio: ["ignore", "ignore", "pipe"],
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      this.#log.push(chunk.toString());
    });
    this.#child = child;
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`the gateway exited: ${this.log}`);
      try {
        const ready = await fetch(`http://127.0.0.1:${this.port}/readyz`);
        if (ready.status === 200) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`the gateway did not get ready: ${this.log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** kill -9: no goodbye, as when its machine dies. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  }

  async stop(): Promise<void> {
    await this.kill();
  }
}

export class Postgres {
  readonly url: string;
  readonly #child: ChildProcess;

  private constructor(url: string, child: ChildProcess) {
    this.url = url;
    this.#child = child;
  }

  static async start(): Promise<Postgres> {
    const bin = process.env.TESTKIT_POSTGRES_BIN ?? resolve(repo, "target/debug/testkit-postgres");
    const child = spawn(bin, [], { stdio: ["pipe", "pipe", "inherit"] });
    const lines = createInterface({ input: child.stdout! });
    const url = await new Promise<string>((resolveUrl, reject) => {
      lines.once("line", resolveUrl);
      child.once("exit", (code) => reject(new Error(`testkit-postgres exited with ${code}`)));
    });
    return new Postgres(url, child);
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode !== null) return;
    const exited = new Promise((r) => this.#child.once("exit", r));
    this.#child.stdin?.end();
    await exited;
  }
}
