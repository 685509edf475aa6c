/**
 * Test and bench helper: a private Redis Cluster (`cluster-enabled`
 * redis-servers on free ports, in a temporary directory), made with
 * `redis-cli --cluster create`.
 *
 * @module
 */

import { untilRedisAnswers } from "./redis_helpers.ts";

/** One node of the cluster. */
export interface ClusterNode {
  port: number;
  url: string;
  child: Deno.ChildProcess;
  /** SIGKILL, and waits for the exit. */
  kill(): Promise<void>;
}

/** A running cluster of our own. */
export interface RedisCluster {
  nodes: ClusterNode[];
  /** Every node's URL, as `--redis-cluster` takes them (comma-separated). */
  urls: string[];
  /** The node that is master of `key`'s slot now. */
  masterOf(key: string): Promise<ClusterNode>;
  /** Resolves once every live node says `cluster_state:ok`. */
  untilOk(timeoutMs?: number): Promise<void>;
  /** Kills every node and removes the directory. */
  stop(): Promise<void>;
}

/**
 * A port whose cluster bus port (port + 10000) is free too, below 55536.
 */
function clusterPort(): number {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 35000);
    try {
      const a = Deno.listen({ hostname: "127.0.0.1", port });
      try {
        const b = Deno.listen({ hostname: "127.0.0.1", port: port + 10000 });
        b.close();
        return port;
      } finally {
        a.close();
      }
    } catch {
      // taken: another
    }
  }
}

/** Runs redis-cli with `args`; its output, or an error with what it said. */
export async function redisCli(args: string[]): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command("redis-cli", {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(stdout);
  if (!success) {
    throw new Error(
      `redis-cli ${args.join(" ")}: ${out}${new TextDecoder().decode(stderr)}`,
    );
  }
  return out;
}

/**
 * Starts `masters` masters with `replicas` replicas each (a node that
 * misses `nodeTimeoutMs` of pings is failed over by its replica).
 */
export async function startCluster(
  options: { masters?: number; replicas?: number; nodeTimeoutMs?: number } = {},
): Promise<RedisCluster> {
  const masters = options.masters ?? 3;
  const replicas = options.replicas ?? 1;
  const dir = await Deno.makeTempDir({ prefix: "chat-cluster-" });
  const nodes: ClusterNode[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((node) => node.kill()));
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      const port = clusterPort();
      const child = new Deno.Command("redis-server", {
        args: [
          "--port",
          String(port),
          "--bind",
          "127.0.0.1",
          "--cluster-enabled",
          "yes",
          "--cluster-config-file",
          `${dir}/nodes-${port}.conf`,
          "--cluster-node-timeout",
          String(options.nodeTimeoutMs ?? 1000),
          "--dir",
          dir,
          "--save",
          "",
          "--appendonly",
          "no",
        ],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      let killed: Promise<void> | undefined;
      nodes.push({
        port,
        url: `redis://127.0.0.1:${port}`,
        child,
        kill: () =>
          killed ??= (async () => {
            try {
              child.kill("SIGKILL");
            } catch {
              // gone already
            }
            await child.status;
          })(),
      });
      await untilRedisAnswers(port, child);
    }
    await redisCli([
      "--cluster",
      "create",
      ...nodes.map((node) => `127.0.0.1:${node.port}`),
      "--cluster-replicas",
      String(replicas),
      "--cluster-yes",
    ]);
  } catch (error) {
    await stop();
    throw error;
  }
  const dead = new Set<ClusterNode>();
  const live = () => nodes.filter((node) => !dead.has(node));
  for (const node of nodes) node.child.status.then(() => dead.add(node));
  const cluster: RedisCluster = {
    nodes,
    urls: nodes.map((node) => node.url),
    masterOf: async (key) => {
      const slot = Number(
        (await redisCli([
          "-p",
          String(live()[0].port),
          "CLUSTER",
          "KEYSLOT",
          key,
        ]))
          .trim(),
      );
      for (const node of live()) {
        const role = await redisCli(["-p", String(node.port), "ROLE"]);
        if (!role.startsWith("master")) continue;
        const ranges = await redisCli([
          "-p",
          String(node.port),
          "CLUSTER",
          "NODES",
        ]);
        const me = ranges.split("\n").find((line) => line.includes("myself"));
        for (const range of me?.split(" ").slice(8) ?? []) {
          const [lo, hi] = range.split("-").map(Number);
          if (slot >= lo && slot <= (hi ?? lo)) return node;
        }
      }
      throw new Error(`no master has slot ${slot}`);
    },
    untilOk: async (timeoutMs = 15000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const states = await Promise.all(
          live().map((node) =>
            redisCli(["-p", String(node.port), "CLUSTER", "INFO"]).catch(() =>
              ""
            )
          ),
        );
        if (states.every((info) => info.includes("cluster_state:ok"))) return;
        if (Date.now() > deadline) {
          throw new Error("the cluster did not reach cluster_state:ok");
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    stop,
  };
  try {
    await cluster.untilOk();
    // Every replica has its master's data before a test kills one.
    const deadline = Date.now() + 15000;
    for (const node of nodes) {
      for (;;) {
        const info = await redisCli([
          "-p",
          String(node.port),
          "INFO",
          "replication",
        ]);
        if (
          info.includes("role:master") ||
          info.includes("master_link_status:up")
        ) break;
        if (Date.now() > deadline) throw new Error("a replica did not sync");
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return cluster;
}
