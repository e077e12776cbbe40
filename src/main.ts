#!/usr/bin/env node
// The `opengms` command: serve (the default), migrate, check-config, --version; and the operator's
// commands that call a running server over the API (src/cli/commands.ts).
import { Command } from "commander";
import { pino } from "pino";
import { refuseUnknownCommand, registerApiCommands } from "./cli/commands.js";
import { ConfigError, configPath, databaseOptions, loadConfig, type Config } from "./config.js";
import { VERSION } from "./package-info.js";
import { migrateLatest, openDatabase, redactUrl } from "./store/database.js";
import { describeError } from "./store/errors.js";

/** configOrExit loads the configuration, or exits with status 2 saying what is wrong with it. */
function configOrExit(path: string | undefined): Config {
  try {
    return loadConfig({ path });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`opengms: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
}

const program = new Command()
  .name("opengms")
  .description("Open mobile contact-center services (GMS-style) over gRPC, Connect and gRPC-Web")
  .version(VERSION, "-V, --version", "print the version and exit")
  .option("-c, --config <path>", "configuration file (default $GMS_CONFIG, then ./config/gms.yaml, then the example shipped with opengms)");

program
  .command("serve", { isDefault: true })
  .description("run the server")
  .action(async () => {
    // The file is found once: a reload reads the same file again, wherever the process looks later.
    const file = configPath({ path: program.opts<{ config?: string }>().config });
    const config = configOrExit(file);
    // Any error logged as `err` is described without SQL, values or a database message (describeError).
    const log = pino({ level: config.log.level, base: { service: "opengms" }, serializers: { err: describeError } });
    log.info({ version: VERSION, config: file, database: redactUrl(config.database.url), pid: process.pid }, "opengms starting");
    // SIGHUP reloads the configuration file (the reload logs what changed, or why it refused); until
    // the server is up it is ignored rather than let end the process, as Node's default would.
    let reload: (() => Promise<unknown>) | undefined = undefined;
    process.on("SIGHUP", () => {
      log.info({ signal: "SIGHUP" }, "signal received: reloading the configuration");
      if (reload === undefined) log.warn("the server is not started yet: nothing reloaded");
      else reload().catch(() => undefined);
    });
    const db = await openDatabase(config.database.url, { ...databaseOptions(config), log: log.child({ component: "database" }) });
    log.info({ database: redactUrl(config.database.url) }, "database ready");
    // Loaded here, not above: the operator's commands start without the server's modules.
    const { startServer } = await import("./server.js");
    const server = await startServer({ config, db, log, load: () => loadConfig({ path: file }) });
    reload = server.reload;
    const stop = (signal: string) => {
      log.info({ signal }, "signal received");
      server.shutdown().then(
        () => process.exit(0),
        (e: unknown) => {
          log.error({ err: describeError(e) }, "shutdown failed");
          process.exit(1);
        },
      );
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });

program
  .command("migrate")
  .description("bring the database schema up to date and exit")
  .action(async () => {
    const config = configOrExit(program.opts<{ config?: string }>().config);
    // knex's own messages (a migration lock held by another node) go to stderr as JSON lines.
    const log = pino({ level: config.log.level, base: { service: "opengms" }, serializers: { err: describeError } }, pino.destination(2));
    // Migrations run without the query timeout: one may take long.
    const db = await openDatabase(config.database.url, { ...databaseOptions(config), queryTimeoutMs: 0, migrate: false, log: log.child({ component: "database" }) });
    try {
      const applied = await migrateLatest(db);
      process.stdout.write(applied.length === 0 ? "schema up to date\n" : `applied ${applied.join(", ")}\n`);
    } finally {
      await db.close();
    }
  });

program
  .command("check-config")
  .description("validate the configuration and exit")
  .action(() => {
    configOrExit(program.opts<{ config?: string }>().config);
    process.stdout.write("configuration is valid\n");
  });

registerApiCommands(program);
refuseUnknownCommand(program, process.argv);

program.parseAsync().catch((e: unknown) => {
  process.stderr.write(`opengms: ${(e as Error).message}\n`);
  process.exit(1);
});
