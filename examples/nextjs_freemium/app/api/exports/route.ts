// No gate here: middleware.ts counts POST /api/exports against `exports` (skene.toml).
export async function POST(request: Request) {
  return Response.json({ export: "queued", by: request.headers.get("x-user-id") });
}
