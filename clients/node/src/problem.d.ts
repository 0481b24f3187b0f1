/** The HTTP answers of a gate, byte for byte those of the Python integrations. */
import type { Decision } from './index.js';

export const CONTENT_TYPE: 'application/problem+json';
export const TYPE_PREFIX: 'tag:skene-pg,2025:';

/** The parts of a gate the answers use (a row of skene.gates()). */
export interface GateInfo {
  feature: string;
  name: string;
  message?: string | null;
  upgradeUrl?: string | null;
}

/** The decision fields the answers use. */
export type DecisionLike = Pick<
  Decision,
  'reason' | 'feature' | 'plan' | 'used' | 'usageLimit' | 'remaining' | 'resetsAt'
>;

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  reason?: string;
  feature?: string;
  plan?: string;
  used?: number;
  limit?: number | null;
  remaining?: number | null;
  resets_at?: string | null;
  upgrade_url?: string | null;
}

export interface Answer {
  status: number;
  body: ProblemBody | null;
  headers: Record<string, string>;
}

export function iso(at: Date | null | undefined): string | null;
export function secondsUntil(at: Date, now: Date): number;
export function ratelimitHeaders(decision: DecisionLike, now?: Date): Record<string, string>;
export function tightest<D extends DecisionLike>(decisions: D[]): D | null;
export function blocked(decision: DecisionLike, gate: GateInfo | null, now?: Date): Answer;
export function anonymous(gate: GateInfo): Answer;
export function unavailable(): Answer;
/** JSON text as Python's json.dumps writes it (", " and ": ", non-ASCII escaped). */
export function pythonJson(value: unknown): string;
export function content(answer: Answer): string;
export function toResponse(answer: Answer): Response;
