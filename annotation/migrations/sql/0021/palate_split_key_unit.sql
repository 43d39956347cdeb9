CREATE OR REPLACE FUNCTION public.palate_split_key_unit(p_kind text, p_key text)
 RETURNS double precision
 LANGUAGE plpgsql
 IMMUTABLE PARALLEL SAFE
AS $function$
DECLARE
    -- annotation.splits._unit: the first 8 bytes of sha256, big-endian, / 2**64.
    v bigint := ('x' || substr(encode(sha256(convert_to(
        'palate-split:' || p_kind || ':' || p_key, 'UTF8')),
        'hex'), 1, 16))::bit(64)::bigint;
BEGIN
    RETURN (CASE WHEN v < 0 THEN v::numeric + 18446744073709551616 ELSE v::numeric
            END)::float8 / 18446744073709551616::float8;
END
$function$

