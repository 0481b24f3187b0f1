import { NextResponse, type NextRequest } from "next/server";
import { gateRequest } from "skene-pg/next";
import { customer, db } from "@/lib/skene";

// Requests matching a feature's `match` patterns (skene.toml) are counted here.
export async function middleware(request: NextRequest) {
  const gate = await gateRequest(request, { db, customer });
  return gate.response ?? NextResponse.next({ headers: gate.headers });
}

// The Node.js runtime (Next 15.5+) can open the TCP connection to PostgreSQL; the
// default Edge runtime cannot.
export const config = { runtime: "nodejs", matcher: "/api/:path*" };
