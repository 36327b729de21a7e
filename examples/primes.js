// Prime factors of a number: {"num": 100} -> "The prime factors of 100 are 2,2,5,5"
addEventListener('fetch', (event) => event.respondWith(factorize(event.request)));

async function factorize(request) {
  const { num } = await request.json();
  if (!Number.isSafeInteger(num) || num < 2) {
    return new Response('Please provide an integer "num" of 2 or more', { status: 400 });
  }
  const factors = [];
  let rest = num;
  for (let divisor = 2; divisor * divisor <= rest; divisor += 1) {
    while (rest % divisor === 0) {
      factors.push(divisor);
      rest /= divisor;
    }
  }
  if (rest > 1) factors.push(rest);
  return new Response(`The prime factors of ${num} are ${factors.join(',')}`);
}
