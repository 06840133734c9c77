-- Known answer: December's order-line volume against the average month,
-- month_demand.December / mean(month_demand) in ground_truth.json.
--
-- Planting: a day's order lines are month_demand x weekday_demand (x payday_boost on the 15th and the last
-- day of a month, x a demand shock's factor on its days) times a constant, rounded.
--
-- Estimator: order lines per day, leaving out paydays and shock days; within each month the mean of its
-- seven weekday means (so the months' weekday mix cancels); per whole year December's level over the mean
-- of its twelve months; the mean over whole years. Needs at least one whole calendar year of sales.
--
-- Run it on a DuckDB warehouse with {ground_truth} replaced by the path of its ground_truth.json.
WITH shock AS (
    SELECT s."from"::DATE AS first_day, s."to"::DATE AS last_day
    FROM (SELECT unnest(demand_shocks) AS s FROM read_json_auto('{ground_truth}'))
),
day_lines AS (
    SELECT date AS day, count(*) AS lines FROM fact_sales GROUP BY date
),
plain_day AS (
    SELECT year(day) AS y, month(day) AS m, isodow(day) AS wd, lines FROM day_lines
    WHERE dayofmonth(day) <> 15 AND day <> last_day(day)
      AND NOT EXISTS (SELECT 1 FROM shock WHERE day BETWEEN first_day AND last_day)
),
weekday_level AS (
    SELECT y, m, wd, avg(lines) AS lines FROM plain_day GROUP BY ALL
),
month_level AS (
    SELECT y, m, avg(lines) AS level FROM weekday_level GROUP BY ALL HAVING count(*) = 7
),
year_ratio AS (
    SELECT y, avg(level) FILTER (WHERE m = 12) / avg(level) AS ratio
    FROM month_level GROUP BY y HAVING count(*) = 12
)
SELECT avg(ratio) AS ratio, count(*) AS years FROM year_ratio
