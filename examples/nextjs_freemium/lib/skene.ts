import { Pool } from "pg";

// The app's pool. skene-pg never names a statement, so DATABASE_URL may be a PgBouncer
// in transaction mode. Each gate call is one statement on this pool: it commits on its own.
export const db = new Pool({ connectionString: process.env.DATABASE_URL });

// Who a request is for. Here the x-user-id header stands in for Clerk's session; with
// @clerk/nextjs: `export const customer = async () => (await auth()).userId;`
export const customer = (request: Request) => request.headers.get("x-user-id");
