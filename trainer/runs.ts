/**
 * The run store in SQLite (node:sqlite): one row per run for fast history pages, plus preferences.
 * The run directories stay the source of truth: `sync` rebuilds rows from them, so a lost or
 * corrupt database file costs nothing.
 */
import { DatabaseSync } from "node:sqlite";
import * as fs from "node:fs";
import * as path from "node:path";

export interface RunRow {
  id: string;
  name: string;
  state: string;
  model: string;
  method: string;
  dataset: string;
  createdAt: string;
  updatedAt: string;
  step: number;
  totalSteps: number;
  trainLoss: number | null;
  evalLoss: number | null;
  message: string;
  error: string | null;
}

export class RunStore {
  private db: DatabaseSync;

  constructor(readonly dataDir: string) {
    fs.mkdirSync(dataDir, { recursive: true });
    const file = path.join(dataDir, "gemma-tuner.db");
    try {
      this.db = this.open(file);
    } catch {
      // Unreadable database: move it aside and rebuild from the run directories.
      try {
        fs.renameSync(file, `${file}.corrupt-${Date.now()}`);
      } catch { /* already gone */ }
      this.db = this.open(file);
    }
  }

  private open(file: string): DatabaseSync {
    const db = new DatabaseSync(file);
    db.exec(`
      PRAGMA journal_mode = WAL;
      CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, name TEXT, state TEXT, model TEXT, method TEXT, dataset TEXT,
        created_at TEXT, updated_at TEXT, step INTEGER, total_steps INTEGER,
        train_loss REAL, eval_loss REAL, message TEXT, error TEXT);
      CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    `);
    db.prepare("SELECT count(*) FROM runs").get();
    return db;
  }

  upsert(r: RunRow): void {
    this.db.prepare(`INSERT INTO runs (id, name, state, model, method, dataset, created_at, updated_at, step, total_steps, train_loss, eval_loss, message, error)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT(id) DO UPDATE SET name=excluded.name, state=excluded.state, model=excluded.model, method=excluded.method,
        dataset=excluded.dataset, created_at=excluded.created_at, updated_at=excluded.updated_at, step=excluded.step,
        total_steps=excluded.total_steps, train_loss=excluded.train_loss, eval_loss=excluded.eval_loss,
        message=excluded.message, error=excluded.error`)
      .run(r.id, r.name, r.state, r.model, r.method, r.dataset, r.createdAt, r.updatedAt, r.step, r.totalSteps, r.trainLoss, r.evalLoss, r.message, r.error);
  }

  remove(id: string): void {
    this.db.prepare("DELETE FROM runs WHERE id = ?").run(id);
  }

  /** Drops rows whose run directory no longer exists. */
  retain(ids: Set<string>): void {
    for (const row of this.db.prepare("SELECT id FROM runs").all() as { id: string }[]) if (!ids.has(row.id)) this.remove(row.id);
  }

  list(): RunRow[] {
    return (this.db.prepare("SELECT * FROM runs ORDER BY created_at DESC").all() as Record<string, unknown>[]).map((r) => ({
      id: String(r.id),
      name: String(r.name),
      state: String(r.state),
      model: String(r.model),
      method: String(r.method),
      dataset: String(r.dataset),
      createdAt: String(r.created_at),
      updatedAt: String(r.updated_at),
      step: Number(r.step),
      totalSteps: Number(r.total_steps),
      trainLoss: r.train_loss === null ? null : Number(r.train_loss),
      evalLoss: r.eval_loss === null ? null : Number(r.eval_loss),
      message: String(r.message ?? ""),
      error: r.error === null ? null : String(r.error),
    }));
  }

  getSetting(key: string): string | undefined {
    const r = this.db.prepare("SELECT value FROM settings WHERE key = ?").get(key) as { value: string } | undefined;
    return r?.value;
  }

  setSetting(key: string, value: string): void {
    this.db.prepare("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(key, value);
  }

  close(): void {
    this.db.close();
  }
}
