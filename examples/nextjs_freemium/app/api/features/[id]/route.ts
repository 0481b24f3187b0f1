import { withGate } from "skene-pg/next";
import { customer, db } from "@/lib/skene";

export const POST = withGate(async (_request: Request, { params }: { params: Promise<{ id: string }> }) =>
  Response.json({ feature: (await params).id, status: "done" }), { db, feature: "api_calls", customer });
