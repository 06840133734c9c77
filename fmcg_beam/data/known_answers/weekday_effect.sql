-- Known answer: each weekday's order-line volume against the average weekday,
-- weekday_demand[day] / mean(weekday_demand) in ground_truth.json.
--
-- Planting: a day's order lines are month_demand x weekday_demand (x payday_boost on paydays, x a demand
-- shock's factor on its days) times a constant, rounded.
--
-- Estimator: order lines per day, leaving out paydays and shock days; within each month, each weekday's mean
-- over the mean of the month's seven weekday means (so the month cancels); the mean over months.
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
    SELECT year(day) AS y, month(day) AS m, isodow(day) AS wd, dayname(day) AS weekday, lines FROM day_lines
    WHERE dayofmonth(day) <> 15 AND day <> last_day(day)
      AND NOT EXISTS (SELECT 1 FROM shock WHERE day BETWEEN first_day AND last_day)
),
weekday_level AS (
    SELECT y, m, wd, any_value(weekday) AS weekday, avg(lines) AS lines FROM plain_day GROUP BY y, m, wd
),
month_level AS (
    SELECT y, m, avg(lines) AS level FROM weekday_level GROUP BY ALL HAVING count(*) = 7
)
SELECT any_value(w.weekday) AS weekday, avg(w.lines / l.level) AS ratio, count(*) AS months
FROM weekday_level w JOIN month_level l USING (y, m)
GROUP BY w.wd
ORDER BY w.wd
