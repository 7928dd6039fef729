// java-failover: a Jedis (JedisSentinelPool) or Lettuce (sentinel RedisURI, or MasterReplica
// with sentinel) client driven by the e2e client matrix. It finds the master only through the
// Sentinel endpoint given, and prints one line per write: "ok <i> <server addr>" once the master
// took it (and, with --wait N, N replicas acknowledged it; else "unacked <i> <addr>"), or
// "err <i> <error>". Errors are retried after a short pause, as an application would.
package dev.vigil.failover;

import io.lettuce.core.ReadFrom;
import io.lettuce.core.RedisClient;
import io.lettuce.core.RedisURI;
import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.api.sync.RedisCommands;
import io.lettuce.core.codec.StringCodec;
import io.lettuce.core.masterreplica.MasterReplica;
import io.lettuce.core.masterreplica.StatefulRedisMasterReplicaConnection;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Set;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.JedisPoolConfig;
import redis.clients.jedis.JedisSentinelPool;

public final class Failover {
    /** One write: the server that took it and how many replicas acknowledged it. */
    record Written(String server, long acked) {}

    interface Client extends AutoCloseable {
        Written write(String key, String value, int replicas);

        @Override
        void close();
    }

    private static final int TIMEOUT_MS = 1000;
    private static final long CONNECT_RETRY_MS = 30_000;

    public static void main(String[] argv) throws InterruptedException {
        Map<String, String> args = parse(argv);
        String[] sentinel = args.getOrDefault("sentinel", "127.0.0.1:26379").split(":");
        String host = sentinel[0];
        int port = Integer.parseInt(sentinel[1]);
        String master = require(args, "master");
        String password = args.get("password");
        String kind = require(args, "client");
        int replicas = Integer.parseInt(args.getOrDefault("wait", "0"));
        long durationMs = (long) (Double.parseDouble(args.getOrDefault("duration", "120")) * 1000);
        long intervalMs = Long.parseLong(args.getOrDefault("interval-ms", "50"));
        String prefix = args.getOrDefault("key-prefix", "vigil:" + kind);

        try (Client client = connect(kind, host, port, master, password)) {
            long deadline = System.currentTimeMillis() + durationMs;
            for (long i = 0; System.currentTimeMillis() < deadline; i++) {
                try {
                    Written w = client.write(prefix + ":" + i, Long.toString(i), replicas);
                    String verdict = replicas == 0 || w.acked() >= replicas ? "ok" : "unacked";
                    System.out.println(verdict + " " + i + " " + w.server());
                    Thread.sleep(intervalMs);
                } catch (RuntimeException e) {
                    String message = (e.getClass().getSimpleName() + ": " + e.getMessage())
                            .replace('\n', ' ');
                    System.out.println("err " + i + " " + message);
                    Thread.sleep(100);
                }
            }
        }
    }

    /**
     * The first connection, retried for a while: on a loaded machine the first Sentinel
     * handshake of a cold JVM can outlast the 1 s timeout, and an application would be restarted
     * rather than give up. Only this first connection is retried here; failovers are the
     * library's to survive.
     */
    static Client connect(String kind, String host, int port, String master, String password)
            throws InterruptedException {
        long deadline = System.currentTimeMillis() + CONNECT_RETRY_MS;
        while (true) {
            try {
                return switch (kind) {
                    case "jedis" -> new JedisClient(host, port, master, password);
                    case "lettuce" -> new LettuceClient(host, port, master, password, false);
                    case "lettuce-mr" -> new LettuceClient(host, port, master, password, true);
                    default -> throw new IllegalArgumentException("--client jedis|lettuce|lettuce-mr");
                };
            } catch (IllegalArgumentException e) {
                throw e;
            } catch (RuntimeException e) {
                if (System.currentTimeMillis() > deadline) {
                    throw e;
                }
                String message = (e.getClass().getSimpleName() + ": " + e.getMessage())
                        .replace('\n', ' ');
                System.out.println("err connect " + message);
                Thread.sleep(250);
            }
        }
    }

    /** `laddr=<ip:port>` of a CLIENT INFO line: the server's own address. */
    static String server(String clientInfo) {
        for (String field : clientInfo.trim().split(" ")) {
            if (field.startsWith("laddr=")) {
                return field.substring("laddr=".length());
            }
        }
        return "?";
    }

    static final class JedisClient implements Client {
        private final JedisSentinelPool pool;

        JedisClient(String host, int port, String master, String password) {
            JedisPoolConfig config = new JedisPoolConfig();
            config.setMaxTotal(2);
            pool = new JedisSentinelPool(
                    master, Set.of(host + ":" + port), config, TIMEOUT_MS, password);
        }

        @Override
        public Written write(String key, String value, int replicas) {
            try (Jedis jedis = pool.getResource()) {
                jedis.set(key, value);
                String server = server(jedis.clientInfo());
                long acked = replicas > 0 ? jedis.waitReplicas(replicas, TIMEOUT_MS) : 0;
                return new Written(server, acked);
            }
        }

        @Override
        public void close() {
            pool.close();
        }
    }

    static final class LettuceClient implements Client {
        private final RedisClient client = RedisClient.create();
        private final StatefulRedisConnection<String, String> connection;
        private final RedisCommands<String, String> commands;

        LettuceClient(String host, int port, String master, String password, boolean masterReplica) {
            RedisURI.Builder uri = RedisURI.Builder.sentinel(host, port, master)
                    .withTimeout(Duration.ofMillis(TIMEOUT_MS));
            if (password != null) {
                uri.withPassword(password.toCharArray());
            }
            if (masterReplica) {
                // Topology from SENTINEL MASTER/REPLICAS, refreshed on Sentinel's events.
                StatefulRedisMasterReplicaConnection<String, String> mr =
                        MasterReplica.connect(client, StringCodec.UTF8, uri.build());
                mr.setReadFrom(ReadFrom.UPSTREAM);
                connection = mr;
            } else {
                connection = client.connect(uri.build());
            }
            commands = connection.sync();
        }

        @Override
        public Written write(String key, String value, int replicas) {
            commands.set(key, value);
            String server = server(commands.clientInfo());
            long acked = replicas > 0 ? commands.waitForReplication(replicas, TIMEOUT_MS) : 0;
            return new Written(server, acked);
        }

        @Override
        public void close() {
            connection.close();
            client.shutdown();
        }
    }

    private static String require(Map<String, String> args, String name) {
        String value = args.get(name);
        if (value == null) {
            throw new IllegalArgumentException("--" + name + " is required");
        }
        return value;
    }

    private static Map<String, String> parse(String[] argv) {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            if (!argv[i].startsWith("--")) {
                throw new IllegalArgumentException("expected --name value, got " + argv[i]);
            }
            args.put(argv[i].substring(2), argv[i + 1]);
        }
        return args;
    }
}
