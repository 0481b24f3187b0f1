export default function Home() {
  return (
    <main>
      <h1>Freemium, counted in PostgreSQL</h1>
      <p>
        <code>POST /api/features/:id</code> is limited to 100 calls a month on the free plan,{" "}
        <code>POST /api/exports</code> to 5. See README.md.
      </p>
    </main>
  );
}
